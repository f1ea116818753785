# case: leases and directory notifications on the input, terminal job control and typing on fds 0-2
# expect: refused 11 of 11|built-in modules cannot be created in the sandbox
sys = __import__('json').codecs.sys
os = sys.modules['os']
fcntl = sys.modules['importlib._bootstrap']._builtin_from_name('fcntl')
refused = tried = 0
def attempt(f, *args):
    global refused, tried
    tried += 1
    try:
        f(*args)
    except PermissionError:
        refused += 1
    except OSError:
        pass
attempt(fcntl.fcntl, 4, 1024, 0)          # F_SETLEASE, F_RDLCK
attempt(fcntl.fcntl, 4, 1026, 0x80000001)  # F_NOTIFY, DN_ACCESS | DN_MULTISHOT
pid = ({HOST_PID}).to_bytes(4, 'little')
for req, arg in ((0x5410, pid),                      # TIOCSPGRP
                 (0x540E, (1).to_bytes(4, 'little')), # TIOCSCTTY
                 (0x5422, b''),                       # TIOCNOTTY
                 (0x40045436, (9).to_bytes(4, 'little')),  # TIOCSIG
                 (0x5412, b'r'),                      # TIOCSTI
                 (0x5414, bytes(8)),                  # TIOCSWINSZ
                 (0x5437, b''),                       # TIOCVHANGUP
                 (0x541D, b''),                       # TIOCCONS
                 (0x4B4E, (9).to_bytes(4, 'little'))):  # KDSIGACCEPT
    attempt(fcntl.ioctl, 2, req, arg)
print('refused', refused, 'of', tried)
