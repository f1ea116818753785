# case: import ctypes
# expect: ImportError
import ctypes
ctypes.CDLL(None).system(b'rm -f {CANARY}')
