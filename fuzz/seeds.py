#!/usr/bin/env python3
"""Writes the committed fuzz seeds, fuzz/corpus/<target>/ (issue 10): the repository's samples
and examples, and the attacks: a SOAP body with a 256 KiB default namespace on 4 000 empty
children (and its attribute and header variants), DTDs, entity bombs, XML-excluded characters,
UTF-16; NUL bytes, lone surrogates and deep nesting in JSON and TOML; Kannel and JSON delivery
reports with broken ids and escapes.

    python3 fuzz/seeds.py      # rewrites the generated seeds; found crashes added by hand stay

The seeds are replayed by hub/tests/fuzz_seeds.rs; input formats are in fuzz/src/lib.rs.
"""
import glob
import json
import os
here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.dirname(here)
root = os.path.join(here, 'corpus')
S11 = 'http://schemas.xmlsoap.org/soap/envelope/'
S12 = 'http://www.w3.org/2003/05/soap-envelope'
RESP = 'urn:clm:hub:responses:v1'
WSSE = 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd'
PT = 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText'
def w(target, name, data):
    d = os.path.join(root, target); os.makedirs(d, exist_ok=True)
    if isinstance(data, str): data = data.encode('utf-8')
    assert len(data) < 300*1024, (name, len(data))
    open(os.path.join(d, name), 'wb').write(data)

def env(inner, ns=S11, header=''):
    return f'<soap:Envelope xmlns:soap="{ns}">{header}<soap:Body>{inner}</soap:Body></soap:Envelope>'
def sub(inner): return env(f'<h:SubmitResponses xmlns:h="{RESP}">{inner}</h:SubmitResponses>')
def uri(n): return 'urn:x:' + 'a'*(n-6)
resp = ('<h:SourceSystem>AMDOCS</h:SourceSystem><h:Response><h:ResponseId>r1</h:ResponseId>'
        '<h:MessageId>0190b7a0-0000-7000-8000-000000000001</h:MessageId><h:Kind>Delivered</h:Kind>'
        '<h:OccurredAt>2026-01-15T09:41:27.125+03:00</h:OccurredAt><h:Detail>{}</h:Detail></h:Response>')
soap = {}
for f in sorted(glob.glob(os.path.join(repo, 'wsdl/samples/*.xml'))):
    soap['sample-' + os.path.basename(f)] = open(f,'rb').read()
soap['attack-default-ns-256k-4000-children.xml'] = sub(f'<x xmlns="{uri(256*1024)}">' + '<a/>'*4000 + '</x>')
soap['attack-4000-attributes-256k-ns.xml'] = sub(f'<x xmlns:p="{uri(256*1024)}"><y' + ''.join(f' p:a{i}=""' for i in range(4000)) + '/></x>')
soap['attack-many-namespaces.xml'] = sub(''.join(f'<x{i} xmlns:p{i}="{uri(2048)}{i}"><p{i}:y p{i}:z=""/></x{i}>' for i in range(40)))
soap['attack-dense-20000-elements.xml'] = sub('<a/>'*20000)
soap['attack-deep-nesting-2000.xml'] = sub('<a>'*2000 + '</a>'*2000)
lol = '<!ENTITY lol0 "lol">' + ''.join(f'<!ENTITY lol{i} "{("&lol%d;" % (i-1))*10}">' for i in range(1,10))
soap['attack-billion-laughs.xml'] = f'<?xml version="1.0"?><!DOCTYPE lolz [{lol}]>' + sub('<lolz>&lol9;</lolz>')
soap['attack-xxe.xml'] = f'<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>' + sub('<h:SourceSystem>&xxe;</h:SourceSystem>')
soap['attack-undeclared-entity.xml'] = sub('<h:SourceSystem>&nbsp;</h:SourceSystem>')
soap['attack-processing-instruction.xml'] = '<?xml version="1.0"?><?xml-stylesheet href="x.xsl"?>' + sub('<?php system("id"); ?>')
soap['charrefs-and-cdata.xml'] = sub(resp.format('&#x72;&amp;&lt;&gt;&apos;&quot;<![CDATA[<&>]]><!-- c -->&#13;&#x1F600;'))
soap['charref-illegal-nul.xml'] = sub(resp.format('&#0;'))
soap['charref-illegal-surrogate.xml'] = sub(resp.format('&#xD800;'))
soap['charref-illegal-control.xml'] = sub(resp.format('&#1;&#xFFFE;'))
soap['leap-second.xml'] = sub(resp.format('x').replace('2026-01-15T09:41:27.125+03:00', '2016-12-31T23:59:60Z'))
soap['datetime-offsets.xml'] = sub(resp.format('x').replace('2026-01-15T09:41:27.125+03:00', '0001-01-01T00:00:00.999999999+23:59'))
soap['nil-and-whitespace.xml'] = sub(resp.format('  spaced  ').replace('<h:MessageId>', '<h:CrmId xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:nil="true"/><h:MessageId> ').replace('</h:MessageId>', ' \n</h:MessageId>'))
soap['ws-security-must-understand-12.xml'] = env(f'<h:SubmitResponsesResponse xmlns:h="{RESP}"><h:Result><h:ResponseId>r</h:ResponseId><h:Outcome>Recorded</h:Outcome></h:Result></h:SubmitResponsesResponse>', S12,
    f'<soap:Header><wsse:Security xmlns:wsse="{WSSE}" soap:mustUnderstand="true"><wsse:UsernameToken><wsse:Username> u\t</wsse:Username><wsse:Password Type="{PT}">p&amp;w </wsse:Password></wsse:UsernameToken></wsse:Security><t:T xmlns:t="urn:t" soap:mustUnderstand="1" soap:role="http://www.w3.org/2003/05/soap-envelope/role/next"/></soap:Header>')
soap['fault-12-subcode.xml'] = env(f'<soap:Fault><soap:Code><soap:Value>soap:Sender</soap:Value><soap:Subcode><soap:Value xmlns:x="urn:x">x:Quota</soap:Value></soap:Subcode></soap:Code><soap:Reason><soap:Text xml:lang="en"> no </soap:Text></soap:Reason><soap:Detail><cmn:ClmFault xmlns:cmn="urn:clm:common:v1"><cmn:Code>C</cmn:Code><cmn:Text> t </cmn:Text><cmn:Retryable>1</cmn:Retryable></cmn:ClmFault></soap:Detail></soap:Fault>', S12)
soap['fault-11-other-code.xml'] = env('<soap:Fault><faultcode xmlns:q="urn:q">q:Custom.Thing</faultcode><faultstring>x</faultstring></soap:Fault>')
soap['version-mismatch.xml'] = env('<x/>', 'urn:not-soap')
soap['utf16le-bom.xml'] = b'\xff\xfe' + sub(resp.format('Привет')).encode('utf-16-le')
soap['utf16be-bom.xml'] = b'\xfe\xff' + sub(resp.format('Привет')).encode('utf-16-be')
soap['utf8-bom.xml'] = b'\xef\xbb\xbf' + sub(resp.format('ok')).encode()
soap['invalid-utf8.xml'] = sub(resp.format('x')).encode().replace(b'>x<', b'>\xff\xc0\xed\xa0\x80<')
soap['nul-byte.xml'] = sub(resp.format('x')).encode().replace(b'>x<', b'>\x00<')
soap['truncated.xml'] = sub(resp.format('x'))[:200]
for k, v in soap.items():
    w('soap_envelope', k, v)
    if k.startswith('attack-') and len(v) > 100*1024:
        continue  # the prelude stops at the Body: its own variant below
    w('soap_prelude', k, v)
w('soap_prelude', 'attack-default-ns-256k-4000-children-in-header.xml',
  env(f'<h:SubmitResponses xmlns:h="{RESP}"/>', S11, f'<soap:Header><x xmlns="{uri(256*1024)}">' + '<a/>'*4000 + '</x></soap:Header>'))

ID = '0190b7a0-0000-7000-8000-000000000001'
kannel = {
  'get-delivered': f'id={ID}&type=1&answer=id%3A1+sub%3A001+dlvrd%3A001+stat%3ADELIVRD+err%3A000+text%3AHello&smsc_id=abc&ts=1767225600',
  'get-undelivered': f'id={ID}&type=2&answer=NACK%2F0x0000000b&smsc_id=%25F&ts=%25T',
  'get-buffered-no-smsc-id': f'id={ID}&type=8&answer=ACK%2F&smsc_id=&ts=-99999999999999',
  'get-type-16': f'id={ID}&type=16',
  'get-unknown-type': f'id={ID}&type=4294967296',
  'get-bad-id': 'id=not-a-uuid&type=1',
  'get-duplicate-params': f'id={ID}&id=x&type=1&type=2&ts=9223372036854775807',
  'post-form': f'id={ID}\ntype=1&answer=%D0%94%D0%BE%D1%81%D1%82%D0%B0%D0%B2%D0%BB%D0%B5%D0%BD%D0%BE&smsc_id=p%2F2',
  'post-nul-and-invalid-utf8': f'id={ID}\ntype=1&answer=%00%FF%C0%ED%A0%80&smsc_id=%00',
  'get-long-answer': f'id={ID}&type=1&answer=' + '%F0%9F%98%80'*300,
  'empty': '',
}
for k, v in kannel.items(): w('sms_kannel_dlr', k, v)

sj = {
  'client-ref': '\n' + json.dumps({"message_id":"m-1","client_ref":ID,"status":"delivered","done_at":"2026-01-01T10:00:00Z"}),
  'route-id': f'id={ID}\n' + json.dumps({"message_id":"m-2","status":"undelivered","error_code":"001"}),
  'external-id': '\n{"message_id":"m-3","status":"expired"}',
  'no-reference': '\n{"message_id":"","status":"rejected"}',
  'bad-route-id': 'id=zz\n{"message_id":"m","status":"buffered"}',
  'unknown-status': '\n{"message_id":"m","status":"lost"}',
  'nul-in-ids': '\n{"message_id":"m\\u0000","status":"delivered","error_code":"\\u0000"}',
  'lone-surrogate': '\n{"message_id":"\\ud800","status":"delivered"}',
  'deep-nesting': '\n' + '['*5000 + ']'*5000,
  'long-message-id': '\n{"message_id":"' + 'x'*600 + '","status":"delivered"}',
  'not-json': '\n\x00\xff{',
}
for k, v in sj.items(): w('sms_json_dlr', k, v)

ex = os.path.join(repo, 'contracts/examples/')
def ld(n): return json.load(open(ex+n))
wink = ld('wink-webhook-clicked.json'); elk = ld('elk-webhook-offer-accepted.json'); em = ld('email-webhook-bounced.json')
def common(target, base):
    w(target, 'example.json', json.dumps(base, ensure_ascii=False, indent=2))
    w(target, 'nul-bytes.json', json.dumps({**base, 'event_id': 'e\u0000'}))
    w(target, 'lone-surrogate.json', json.dumps(base).replace(base['event_id'], '\\udc00x', 1))
    w(target, 'deep-nesting.json', '{"event_id":' + '['*5000 + ']'*5000 + '}')
    w(target, 'deep-nesting-objects.json', '{"a":'*3000 + '1' + '}'*3000)
    w(target, 'unknown-field.json', json.dumps({**base, 'extra': 1}))
    w(target, 'empty-event-id.json', json.dumps({**base, 'event_id': '  '}))
    w(target, 'long-event-id.json', json.dumps({**base, 'event_id': 'e'*1000}))
    w(target, 'whitespace', ' \n\t')
    w(target, 'not-json', b'\xff\xfe{"')
common('webhook_wink', wink)
common('webhook_elk', elk)
common('webhook_email', em)
w('webhook_email', 'message-id-only', '<0190a0c27b8e7c1d9f000123456789ab.clm@mail.example.ru>')
w('webhook_email', 'message-id-bare-upper', ' 0190A0C27B8E7C1D9F000123456789AB.CLM@mail.example.ru ')
w('webhook_email', 'message-id-multibyte', '<ж0190a0c27b8e7c1d9f000123456789.clm@ж>')
w('webhook_email', 'diagnostic-addresses.json', json.dumps({**em, 'bounce': {**em.get('bounce', {}), 'diagnostic': '550 5.1.1 <ivan@example.ru> ж@ж.рф @@ a@ <@>'}}, ensure_ascii=False))
w('webhook_email', 'clicked-url.json', json.dumps({**em, 'kind': 'clicked', 'bounce': None, 'url': 'https://example.ru/?a=1'}))

comm = {"id": ID, "campaign_id": "c-1", "customer_id": "cust-1", "channel": "sms", "recipient": "+79001234567",
        "content": {"text": "Привет! Ваш тариф обновлён 😀"}, "expires_at": "2030-01-01T01:30:00Z", "priority": 7,
        "timezone": "Asia/Vladivostok", "attributes": {"segment": "b2c"}}
em_comm = {**comm, "id": "0190b7a0-0000-7000-8000-000000000002", "channel": "email", "recipient": "ivan@example.ru",
        "content": {"subject": "s", "html": "<p>x</p>", "text": "t", "params": {"a": [1, 2.5, -0.0, 1e300, None, {"b": "c"}]}}}
cj = {
  'sms.json': json.dumps(comm, ensure_ascii=False, indent=1),
  'email-params.json': json.dumps(em_comm),
  'batch.json': json.dumps({"communications": [comm, em_comm, {"id": "x"}, 5]}),
  'nul-bytes.json': json.dumps({**comm, "campaign_id": "c\u0000", "content": {"text": "a\u0000b"}}),
  'lone-surrogate.json': json.dumps(comm).replace('c-1', '\\ud83dx'),
  'surrogate-pair.json': json.dumps(comm).replace('c-1', '\\ud83d\\ude00'),
  'deep-nesting-params.json': json.dumps(em_comm).replace('"a": [1', '"a": ' + '['*5000 + ']'*5000 + ', "z": [1'),
  'deep-nesting-top.json': '['*20000 + ']'*20000,
  'deep-nesting-objects.json': '{"communications":' + '{"a":'*3000 + '1' + '}'*3000 + '}',
  'unknown-field.json': json.dumps({**comm, "extra": True}),
  'bad-timezone.json': json.dumps({**comm, "timezone": "Mars/Olympus"}),
  'priority-overflow.json': json.dumps({**comm, "priority": 256}),
  'huge-numbers.json': json.dumps(em_comm).replace('1e+300', '1e400').replace('2.5', '123456789012345678901234567890'),
  'not-object.json': '"x"',
  'communications-not-array.json': '{"communications": {}}',
}
for k, v in cj.items(): w('communication_json', k, v)

cfg = open(os.path.join(repo, 'deploy/hub.toml')).read()
hc = {
  'deploy-hub.toml': cfg,
  'empty.toml': '',
  'sandbox.toml': 'sandbox = true\n[channels.sms]\nenabled = true\n',
  'unknown-key.toml': '[server]\nnope = 1\n',
  'env-overrides': 'sandbox = true\n#--env--\nCLM_HUB__CHANNELS__SMS__POLICY__RATE=50\nCLM_HUB__SERVER__API_TOKEN=12345\nCLM_HUB__STORE__URL=postgres://x\nCLM_HUB____=1\nCLM_HUB__=x\nCLM_HUB__A__B__C__D=[1,2]\n',
  'bad-store-url.toml': '[store]\nurl = "mysql://x"\n',
  'deep-inline-tables.toml': 'a = ' + '{b = '*500 + '1' + '}'*500 + '\n',
  'deep-arrays.toml': 'a = ' + '['*5000 + ']'*5000 + '\n',
  'nul-and-controls.toml': 'data_dir = "a\\u0000b"\n[store]\nurl = "sqlite:\u0001"\n',
  'big-numbers.toml': '[dispatcher]\nbatch = 99999999999999999999\n',
  'not-utf8.toml': b'sandbox = \xff\n',
}
for k, v in hc.items(): w('hub_config', k, v)
