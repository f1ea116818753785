# case: the same through ioctl: FIOSETOWN, SIOCSPGRP (sockets), FIOASYNC on the channel and a pipe
# expect: refused 9 of 9|built-in modules cannot be created in the sandbox
sys = __import__('json').codecs.sys
os = sys.modules['os']
fcntl = sys.modules['importlib._bootstrap']._builtin_from_name('fcntl')
r, w = os.pipe()
pid = ({HOST_PID}).to_bytes(4, 'little')
refused = tried = 0
for fd in (3, r, w):
    for req, arg in ((0x8901, pid), (0x8902, pid), (0x5452, (1).to_bytes(4, 'little'))):
        tried += 1
        try:
            fcntl.ioctl(fd, req, arg)
        except PermissionError:
            refused += 1
        except OSError:
            pass
os.write(w, b'x')
print('refused', refused, 'of', tried)
