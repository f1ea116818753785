# case: chmod the canary
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
os.chmod('{CANARY}', 0o777)
