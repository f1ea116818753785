# case: symlink to the canary
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
os.symlink('{CANARY}', '{CANARY_DIR}/link')
