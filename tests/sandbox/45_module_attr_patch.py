# case: monkeypatch an allowed module
# expect: patched
import json, re
json.dumps = None
re.findall = None
print('patched')
