# case: delete the canary
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
os.remove('{CANARY}')
