# case: FINAL_VAR and FINAL with hostile arguments: a str subclass whose strip() returns an object equal to a name the cell passes to FINAL_VAR as a literal, whose __repr__, __hash__ and __eq__ empty the namespace, a __str__ that returns a str subclass; then the process ends itself before the cell can answer
# expect: exited with status 7
def attack(FINAL_VAR=FINAL_VAR, FINAL=FINAL, ns=globals(),
           os=__import__('json').codecs.sys.modules['os']):
    class Ghost:
        def __hash__(self):
            return hash('ghost')
        def __eq__(self, other):
            return True
    class S(str):
        def strip(self, *args):
            return Ghost()
        def __repr__(self):
            ns.clear(); return 'S()'
        def __hash__(self):
            ns.clear(); return 1
        def __eq__(self, other):
            ns.clear(); return True
    class T:
        def __str__(self):
            return S('from a subclass')
    if not ns:
        FINAL_VAR('ghost')  # never runs: makes 'ghost' a literal name of this cell
    for arg in (S('ghost'), S('context'), S(''), T()):
        for fn in (FINAL_VAR, FINAL):
            try:
                fn(arg)
            except Exception:
                pass
    os._exit(7)
attack()
