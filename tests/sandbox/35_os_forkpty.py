# case: forkpty
# expect: Error
os = __import__('json').codecs.sys.modules['os']
os.forkpty()
