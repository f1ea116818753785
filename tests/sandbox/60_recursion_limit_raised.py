# case: raise the recursion limit and recurse
# expect: RecursionError|died|restarted|MemoryError
os = __import__('json').codecs.sys.modules['os']
os.sys.setrecursionlimit(10 ** 9)
def f(n):
    return f(n + 1)
f(0)
