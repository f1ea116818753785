# case: build a function from a code object
# expect: PermissionError
import json
os = json.codecs.sys.modules['os']
f = (lambda: None)
code = compile("open('{CANARY}', 'w').write('pwned')", 'x', 'exec')
f.__code__ = code.replace(co_name='<lambda>') if False else f.__code__
exec(code, {{}})
