# case: overwrite builtins
# expect: ValueError|patched
import json
b = json.codecs.sys.modules['builtins']
b.len = lambda x: 0
b.print = None
b.__import__ = lambda *a, **k: None
b.repr('patched')
raise ValueError('patched')
