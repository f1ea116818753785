# case: read a file outside the sandbox
# expect: PermissionError
print(open('{CANARY}').read())
