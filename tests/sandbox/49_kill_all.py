# case: signal every process
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
os.kill(-1, 9)
