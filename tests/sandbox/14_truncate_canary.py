# case: truncate the canary by path
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
os.truncate('{CANARY}', 0)
