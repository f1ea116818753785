# case: keys of a str subclass whose hash collides with FINAL, answer, llm_query, ready, json and __import__, and whose __eq__ plants a forged FINAL and llm_query (or ends the process), in the namespace, the answer dict, sys.modules, a module's and the builtins' dicts: any lookup the sandbox makes after the cell would run it
# expect: keys planted
sys = __import__('json').codecs.sys
os = sys.modules['os']
ns = globals()
armed = []
def fake(*args, **kwargs):
    return 'forged'
class Key(str):
    def __hash__(self):
        return str.__hash__(self)
    def __eq__(self, other):
        if len(armed) > 1:
            os._exit(9)
        if armed:
            armed.append(2)
            ns['llm_query'] = ns['FINAL'] = ns['FINAL_VAR'] = ns['SHOW_VARS'] = fake
        return False
# Each real key goes first, so that a lookup of the name meets the impostor.
ans = answer
for d, names in ((ans, ('ready', 'content')),
                 (sys.modules, ('json', '_rlm')),
                 (sys.modules['json'].__dict__, ('dumps',)),
                 (sys.modules['builtins'].__dict__, ('__import__', 'len')),
                 (sys.__dict__, ('stderr',)),
                 (ns, ('FINAL', 'FINAL_VAR', 'answer', 'llm_query', 'context', '__builtins__',
                       'SHOW_VARS'))):
    for name in names:
        d.pop(name, None)
        d[Key(name)] = 'shadow'
print('keys planted')
armed.append(1)
planted = True
