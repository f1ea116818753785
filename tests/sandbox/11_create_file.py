# case: create a new file next to the canary
# expect: PermissionError
open('{CANARY_DIR}/new.txt', 'w').write('x')
