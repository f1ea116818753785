# case: make the kernel kill the host: F_SETSIG(SIGKILL), F_SETOWN(host), O_ASYNC on the channel and a pipe, then write
# expect: refused 12 of 12|built-in modules cannot be created in the sandbox
sys = __import__('json').codecs.sys
os = sys.modules['os']
fcntl = sys.modules['importlib._bootstrap']._builtin_from_name('fcntl')
r, w = os.pipe()
refused = tried = 0
for fd in (3, r, w):
    for cmd, arg in ((fcntl.F_SETSIG, 9), (fcntl.F_SETOWN, {HOST_PID}),
                     (fcntl.F_SETOWN, os.getppid() or 1),
                     (fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)):
        tried += 1
        try:
            fcntl.fcntl(fd, cmd, arg)
        except PermissionError:
            refused += 1
os.write(w, b'x')
print('refused', refused, 'of', tried)
