# case: raise its own limits
# expect: PermissionError|ValueError
os = __import__('json').codecs.sys.modules['os']
import json
res = os.sys.modules.get('resource')
if res is None:
    raise PermissionError('no resource module')
res.setrlimit(res.RLIMIT_AS, (-1, -1))
