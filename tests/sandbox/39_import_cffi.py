# case: import cffi
# expect: ImportError
import cffi
cffi.FFI().dlopen(None)
