# case: load a module through the import machinery
# expect: Error
os = __import__('json').codecs.sys.modules['os']
ib = os.sys.modules['_frozen_importlib']
spec = ib._bootstrap_external.PathFinder.find_spec('ctypes')
print(spec)
m = ib.module_from_spec(spec)
