# case: fork
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
pid = os.fork()
if pid == 0:
    os._exit(0)
