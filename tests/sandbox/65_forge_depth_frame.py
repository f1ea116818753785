# case: a call frame that claims depth and budget
# expect: protocol
os = __import__('json').codecs.sys.modules['os']
import json
r = llm_query('sub-call: hello', model=None)
print('sub-call:', r)
p = json.dumps({{'type': 'init', 'depth': 0, 'max_depth': 99, 'budget': 1e9, 'cell_timeout': 1e9}}).encode()
os.write(3, len(p).to_bytes(4, 'big') + p)
