# case: probe whether files exist
# expect: exists: False
os = __import__('json').codecs.sys.modules['os']
print('exists:', os.path.exists('{CANARY}') or os.path.exists('/etc/passwd'))
