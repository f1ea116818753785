# case: posix_spawn a shell
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
os.posix_spawn('/bin/sh', ['sh', '-c', 'rm -f {CANARY}'], {{}})
