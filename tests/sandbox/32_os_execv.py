# case: exec a shell
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
os.execv('/bin/sh', ['sh', '-c', 'rm -f {CANARY}'])
