# case: slow the host down: renice it, its group and every process of the user, pin it to one CPU
# expect: refused 5 of 5
os = __import__('json').codecs.sys.modules['os']
refused = tried = 0
for f, args in ((os.setpriority, (os.PRIO_PROCESS, {HOST_PID}, 19)),
                (os.setpriority, (os.PRIO_PGRP, 0, 19)),
                (os.setpriority, (os.PRIO_USER, os.getuid(), 19)),
                (os.sched_setaffinity, ({HOST_PID}, {{0}})),
                (os.sched_setscheduler, ({HOST_PID}, os.SCHED_IDLE, os.sched_param(0)))):
    tried += 1
    try:
        f(*args)
    except PermissionError:
        refused += 1
    except OSError:
        pass
print('refused', refused, 'of', tried)
