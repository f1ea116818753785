# case: stat the canary
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
print(os.stat('{CANARY}'))
