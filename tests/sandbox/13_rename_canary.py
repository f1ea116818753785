# case: rename the canary
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
os.rename('{CANARY}', '{CANARY}.moved')
