# case: have the host store chosen bytes as a search index (fd 6: 'S' + key + data), then search
# expect: store (sent|refused) b'' 1
os = __import__('json').codecs.sys.modules['os']
try:
    os.write(6, b'S' + b'0123456789abcdef' * 2 + b'{MARK}' * 100000)
    sent = 'sent'
except OSError:
    sent = 'refused'
print('store', sent, os.read(6, 1), len(search('fox')))
