# case: find a socket module already loaded
# expect: KeyError|not allowed
os = __import__('json').codecs.sys.modules['os']
_s = os.sys.modules['_socket']
_s.socket().connect(('127.0.0.1', {PORT}))
