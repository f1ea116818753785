# case: swap sys.modules['re'] for os
# expect: swapped
os = __import__('json').codecs.sys.modules['os']
os.sys.modules['re'] = os
import re
print('swapped', re is os)
