# case: flood the search-cache socket with requests for keys of other inputs, then search
# expect: replies 3000 1 the quick
os = __import__('json').codecs.sys.modules['os']
zeros = 0
for i in range(3000):
    os.write(6, b'L' + b'%032x' % i)
    zeros += os.read(6, 1) == b'\x00'
print('replies', zeros, len(search('fox')), search('fox')[0]['text'][:9])
