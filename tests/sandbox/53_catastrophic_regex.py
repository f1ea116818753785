# case: a catastrophic regex (C code that never checks signals)
# expect: TimeoutError
# flags: slow
import re
re.match(r'(a+)+$', 'a' * 40 + 'b')
