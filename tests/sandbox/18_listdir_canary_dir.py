# case: list the canary's directory
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
print(os.listdir('{CANARY_DIR}'))
