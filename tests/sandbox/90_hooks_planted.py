# case: plant hooks the per-cell restore once missed: a profile and a trace function, an audit hook that fails every compile, gc callbacks and thresholds, signal handlers, a wake-up fd, timers, a blocked SIGINT
# expect: hooks: profile refused, trace refused, gc unreachable, signals planted
sys = __import__('json').codecs.sys
def spy(*args):
    raise SystemExit('spied')
out = []
for name in ('setprofile', 'settrace'):
    try:
        getattr(sys, name)(spy)
        out.append(name[3:] + ' planted')
    except RuntimeError as e:
        out.append(name[3:] + ' refused' if 'not available in the sandbox' in str(e) else repr(e))
def audit(event, args):
    if event == 'compile':
        raise RuntimeError('bricked')
sys.addaudithook(audit)
try:
    gc = sys.modules['importlib._bootstrap']._builtin_from_name('gc')
    gc.callbacks.append(spy)
    gc.set_threshold(1, 1, 1)
    out.append('gc planted')
except ImportError:
    out.append('gc unreachable')
signal = sys.modules['_signal']
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGUSR1, spy)
signal.signal(signal.SIGALRM, spy)
os = sys.modules['os']
r, w = os.pipe()
os.set_blocking(w, False)
signal.set_wakeup_fd(w)
signal.setitimer(signal.ITIMER_REAL, 0.5, 0.5)
signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGINT}})
sys.setrecursionlimit(50)
out.append('signals planted')
print('hooks: ' + ', '.join(out))
