# case: curl the listener through os.system
# expect: rc -?[1-9]
os = __import__('json').codecs.sys.modules['os']
rc = os.system('curl -s http://127.0.0.1:{PORT}/ > {CANARY}')
print('rc', rc)
