# case: overwrite the canary
# expect: PermissionError
open('{CANARY}', 'w').write('pwned')
