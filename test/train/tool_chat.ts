// A Hermes/Qwen2.5-style chat template that renders "tools" into the system turn, assistant
// "tool_calls" as <tool_call> blocks and "tool" messages as <tool_response> user turns, plus a
// small jsonl of such conversations. Shared by the data and CLI tests of tool-calling chat data.

export const TOOL_TEMPLATE =
  '{{ bos_token }}' +
  "{%- if tools %}{{ '<|im_start|>system\\n' }}{% if messages[0].role == 'system' %}{{ messages[0].content + '\\n\\n' }}{% endif %}" +
  "{{ 'You may call these functions:\\n<tools>\\n' }}{% for t in tools %}{{ t | tojson }}{{ '\\n' }}{% endfor %}" +
  '{{ \'</tools>\\nCall one as <tool_call>{"name": ..., "arguments": ...}</tool_call><|im_end|>\\n\' }}' +
  "{%- elif messages[0].role == 'system' %}{{ '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{% endif %}" +
  '{%- for m in messages %}' +
  "{%- if m.role == 'system' %}" +
  "{%- elif m.role == 'assistant' %}{{ '<|im_start|>assistant\\n' }}{% if m.content %}{{ m.content }}{% endif %}" +
  '{%- if m.tool_calls %}{% for c in m.tool_calls %}{% if m.content or not loop.first %}{{ "\\n" }}{% endif %}' +
  '{{ \'<tool_call>\\n{"name": "\' + c.function.name + \'", "arguments": \' }}{{ c.function.arguments | tojson }}{{ \'}\\n</tool_call>\' }}{% endfor %}{% endif %}' +
  "{{ '<|im_end|>\\n' }}" +
  "{%- elif m.role == 'tool' %}{{ '<|im_start|>user\\n<tool_response>\\n' + m.content + '\\n</tool_response><|im_end|>\\n' }}" +
  "{%- else %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endif %}" +
  '{%- endfor %}' +
  "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

export const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};

/** One conversation: the user asks, the assistant only calls a tool, the tool answers, the assistant answers. */
export function weatherConversation(city: string, degrees: number): Record<string, unknown> {
  return {
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: `Weather in ${city}?` },
      { role: 'assistant', content: null, tool_calls: [{ type: 'function', function: { name: 'get_weather', arguments: { city } } }] },
      { role: 'tool', name: 'get_weather', content: `${degrees} C` },
      { role: 'assistant', content: `It is ${degrees} C in ${city}.` },
    ],
    tools: [WEATHER_TOOL],
  };
}
