# case: learn the working directory
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
print(os.getcwd())
