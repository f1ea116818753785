# case: SHOW_VARS and the listing after the cell walk a namespace of hostile objects: str-subclass keys whose __hash__ and __eq__ rewrite the namespace, values whose __len__, __repr__, __str__ and __bool__ do, and garbage whose finalizers resize it while the walk allocates
# expect: REPL variables:
ns = globals()
def churn():
    for i in range(100):
        ns['junk%d' % i] = i
    for i in range(100):
        ns.pop('junk%d' % i, None)
class Evil:
    def __len__(self):
        churn(); return 10 ** 30
    def __repr__(self):
        churn(); return 'evil'
    def __str__(self):
        churn(); raise RuntimeError('str')
    def __bool__(self):
        churn(); raise RuntimeError('bool')
    def __hash__(self):
        churn(); return 1
    def __eq__(self, other):
        churn(); return True
class EvilList(list):
    def __len__(self):
        churn(); return -1
class EvilKey(str):
    def __hash__(self):
        churn(); return 7
    def __eq__(self, other):
        return False
class Cycle:
    def __del__(self):
        churn()
def garbage():
    for i in range(300):
        c = Cycle()
        c.me = c
for i in range(40):
    ns[EvilKey('k%d' % i)] = Evil()
evil, evil_list, evil_key = Evil(), EvilList([1, 2]), EvilKey('abc')
show = SHOW_VARS
for i in range(20):
    garbage()
    listing = show()
print(listing.split('\n')[0])
garbage()
