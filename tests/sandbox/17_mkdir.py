# case: make a directory
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
os.mkdir('{CANARY_DIR}/d')
