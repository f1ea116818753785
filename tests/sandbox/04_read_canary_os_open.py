# case: read the canary with os.open
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
fd = os.open('{CANARY}', os.O_RDONLY)
print(os.read(fd, 100))
