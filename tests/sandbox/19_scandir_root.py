# case: list /
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
print([e.name for e in os.scandir('/')])
