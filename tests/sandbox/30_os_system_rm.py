# case: os.system rm -rf
# expect: rc -?[1-9]
os = __import__('json').codecs.sys.modules['os']
rc = os.system('rm -f {CANARY}')
print('rc', rc)
