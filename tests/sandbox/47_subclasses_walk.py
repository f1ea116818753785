# case: object.__subclasses__() walk to a file opener
# expect: PermissionError|not found
found = [c for c in object.__subclasses__() if c.__name__ in ('FileIO', 'BufferedReader', 'FileLoader')]
if not found:
    raise LookupError('opener not found')
for c in found:
    if c.__name__ == 'FileIO':
        c('{CANARY}', 'w')
    if c.__name__ == 'FileLoader':
        c('x', '{CANARY}').get_data('{CANARY}')
