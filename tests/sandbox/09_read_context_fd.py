# case: read the context descriptor after load
# expect: Bad file descriptor
os = __import__('json').codecs.sys.modules['os']
print(os.read(4, 100))
