# case: become another user
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
os.setuid(0)
