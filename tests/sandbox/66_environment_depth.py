# case: raise depth through the environment
# expect: env: 
os = __import__('json').codecs.sys.modules['os']
os.environ['RLM_MAX_DEPTH'] = '99'
os.putenv('RLM_DEPTH', '0')
print('env:', dict(os.environ))
