# case: import pty
# expect: ImportError
import pty
pty.spawn('/bin/sh')
