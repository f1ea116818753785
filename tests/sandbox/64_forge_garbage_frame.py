# case: write garbage on the channel
# expect: protocol|oversized|garbled
os = __import__('json').codecs.sys.modules['os']
os.write(3, b'\xff' * 64)
