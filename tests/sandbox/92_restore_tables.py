# case: find the restore tables (REPL name -> original object, the module snapshots) through gc.get_objects and put a forged FINAL and llm_query in them; forge them in the _rlm module and sys.modules too
# expect: tables: gc unreachable, _rlm patched
sys = __import__('json').codecs.sys
def fake(*args, **kwargs):
    return 'forged'
out = []
for route in (lambda: sys.modules['importlib._bootstrap']._builtin_from_name('gc'),
              lambda: sys.modules['_frozen_importlib'].BuiltinImporter.create_module(
                  sys.modules['_frozen_importlib'].ModuleSpec('gc', None))):
    try:
        gc = route()
        for obj in gc.get_objects():
            if isinstance(obj, dict) and 'llm_query' in obj:
                obj['llm_query'] = obj['FINAL'] = fake
        out.append('gc walked')
    except ImportError:
        pass
if not out:
    out.append('gc unreachable')
rlm = sys.modules['_rlm']
rlm.llm_query = rlm.FINAL = rlm.FINAL_VAR = fake
sys.modules['_rlm'] = type(sys)('_rlm')
out.append('_rlm patched')
print('tables: ' + ', '.join(out))
