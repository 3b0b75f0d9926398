#!/usr/bin/env python3
"""Golden data for the chat-template renderer (src/engine/chat_template.rs).

Renders fixed conversations through real model chat templates exactly as Hugging Face
transformers does (`transformers.utils.chat_template_utils.render_jinja_template`, the function
behind `tokenizer.apply_chat_template(..., tokenize=False)`: jinja2's ImmutableSandboxedEnvironment
with trim_blocks, lstrip_blocks, loopcontrols, and transformers' tojson / raise_exception /
strftime_now), and writes tests/fixtures/chat_templates.json for tests/chat_template.rs.

    python3 -m venv /tmp/ct-venv && /tmp/ct-venv/bin/pip install transformers jinja2
    /tmp/ct-venv/bin/python tools/chat_template_golden.py [--smol-dir /tmp/ar/smol-hf]

With --smol-dir (a SmolLM2-135M-Instruct Hugging Face folder, default /tmp/ar/smol-hf when it
exists) every case is also rendered through `AutoTokenizer.from_pretrained(dir)
.apply_chat_template(..., tokenize=False)` and must agree, and the folder's own template must equal
the SmolLM2 text below. No network access and no torch are needed.

Each case's `extra_json` holds the extra template variables (tools, date_string, ...) as JSON text,
so that their key order survives into the Rust test. Cases whose `requires` list is not empty need
a minijinja feature (loop_controls, preserve_order) that the Rust side checks for at run time.
"""

import argparse
import json
import os
import sys
from datetime import datetime, timezone

import jinja2
import transformers
from transformers.utils.chat_template_utils import render_jinja_template

# --- Real templates, verbatim. ---------------------------------------------------------------

# HuggingFaceTB/SmolLM2-135M-Instruct, tokenizer_config.json "chat_template" (the GGUF conversion
# carries the same text as tokenizer.chat_template).
SMOLLM2 = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"

# meta-llama/Llama-3.3-70B-Instruct (same text as Llama-3.1-8B-Instruct): bos_token, date_string,
# builtin_tools / tools branches. Copy: llama.cpp tests/chat/templates/meta-llama-Llama-3.3-70B-Instruct.jinja
LLAMA_3_3 = "{{- bos_token }}\n{%- if custom_tools is defined %}\n    {%- set tools = custom_tools %}\n{%- endif %}\n{%- if not tools_in_user_message is defined %}\n    {%- set tools_in_user_message = true %}\n{%- endif %}\n{%- if not date_string is defined %}\n    {%- set date_string = \"26 Jul 2024\" %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n\n{#- This block extracts the system message, so we can slot it into the right place. #}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n\n{#- System message + builtin tools #}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{%- if builtin_tools is defined or tools is not none %}\n    {{- \"Environment: ipython\\n\" }}\n{%- endif %}\n{%- if builtin_tools is defined %}\n    {{- \"Tools: \" + builtin_tools | reject('equalto', 'code_interpreter') | join(\", \") + \"\\n\\n\"}}\n{%- endif %}\n{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n{%- if tools is not none and not tools_in_user_message %}\n    {{- \"You have access to the following functions. To call a function, please respond with JSON for a function call.\" }}\n    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}\n    {{- \"Do not use variables.\\n\\n\" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n        {{- \"\\n\\n\" }}\n    {%- endfor %}\n{%- endif %}\n{{- system_message }}\n{{- \"<|eot_id|>\" }}\n\n{#- Custom tools are passed in a user message with some extra guidance #}\n{%- if tools_in_user_message and not tools is none %}\n    {#- Extract the first user message so we can plug it in here #}\n    {%- if messages | length != 0 %}\n        {%- set first_user_message = messages[0]['content']|trim %}\n        {%- set messages = messages[1:] %}\n    {%- else %}\n        {{- raise_exception(\"Cannot put tools in the first user message when there's no first user message!\") }}\n{%- endif %}\n    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n    {{- \"Given the following functions, please respond with a JSON for a function call \" }}\n    {{- \"with its proper arguments that best answers the given prompt.\\n\\n\" }}\n    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}\n    {{- \"Do not use variables.\\n\\n\" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n        {{- \"\\n\\n\" }}\n    {%- endfor %}\n    {{- first_user_message + \"<|eot_id|>\"}}\n{%- endif %}\n\n{%- for message in messages %}\n    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n    {%- elif 'tool_calls' in message %}\n        {%- if not message.tool_calls|length == 1 %}\n            {{- raise_exception(\"This model only supports single tool-calls at once!\") }}\n        {%- endif %}\n        {%- set tool_call = message.tool_calls[0].function %}\n        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}\n            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n            {{- \"<|python_tag|>\" + tool_call.name + \".call(\" }}\n            {%- for arg_name, arg_val in tool_call.arguments | items %}\n                {{- arg_name + '=\"' + arg_val + '\"' }}\n                {%- if not loop.last %}\n                    {{- \", \" }}\n                {%- endif %}\n                {%- endfor %}\n            {{- \")\" }}\n        {%- else  %}\n            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n            {{- '{\"name\": \"' + tool_call.name + '\", ' }}\n            {{- '\"parameters\": ' }}\n            {{- tool_call.arguments | tojson }}\n            {{- \"}\" }}\n        {%- endif %}\n        {%- if builtin_tools is defined %}\n            {#- This means we're in ipython mode #}\n            {{- \"<|eom_id|>\" }}\n        {%- else %}\n            {{- \"<|eot_id|>\" }}\n        {%- endif %}\n    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}\n        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}\n        {%- if message.content is mapping or message.content is iterable %}\n            {{- message.content | tojson }}\n        {%- else %}\n            {{- message.content }}\n        {%- endif %}\n        {{- \"<|eot_id|>\" }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n"

# meta-llama/Llama-3.2-3B-Instruct: strftime_now for the date. Copy: llama.cpp
# models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja
LLAMA_3_2 = "{{- bos_token }}\n{%- if custom_tools is defined %}\n    {%- set tools = custom_tools %}\n{%- endif %}\n{%- if not tools_in_user_message is defined %}\n    {%- set tools_in_user_message = true %}\n{%- endif %}\n{%- if not date_string is defined %}\n    {%- if strftime_now is defined %}\n        {%- set date_string = strftime_now(\"%d %b %Y\") %}\n    {%- else %}\n        {%- set date_string = \"26 Jul 2024\" %}\n    {%- endif %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n\n{#- This block extracts the system message, so we can slot it into the right place. #}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n\n{#- System message #}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{%- if tools is not none %}\n    {{- \"Environment: ipython\\n\" }}\n{%- endif %}\n{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n{%- if tools is not none and not tools_in_user_message %}\n    {{- \"You have access to the following functions. To call a function, please respond with JSON for a function call.\" }}\n    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}\n    {{- \"Do not use variables.\\n\\n\" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n        {{- \"\\n\\n\" }}\n    {%- endfor %}\n{%- endif %}\n{{- system_message }}\n{{- \"<|eot_id|>\" }}\n\n{#- Custom tools are passed in a user message with some extra guidance #}\n{%- if tools_in_user_message and not tools is none %}\n    {#- Extract the first user message so we can plug it in here #}\n    {%- if messages | length != 0 %}\n        {%- set first_user_message = messages[0]['content']|trim %}\n        {%- set messages = messages[1:] %}\n    {%- else %}\n        {{- raise_exception(\"Cannot put tools in the first user message when there's no first user message!\") }}\n{%- endif %}\n    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n    {{- \"Given the following functions, please respond with a JSON for a function call \" }}\n    {{- \"with its proper arguments that best answers the given prompt.\\n\\n\" }}\n    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}\n    {{- \"Do not use variables.\\n\\n\" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n        {{- \"\\n\\n\" }}\n    {%- endfor %}\n    {{- first_user_message + \"<|eot_id|>\"}}\n{%- endif %}\n\n{%- for message in messages %}\n    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n    {%- elif 'tool_calls' in message %}\n        {%- if not message.tool_calls|length == 1 %}\n            {{- raise_exception(\"This model only supports single tool-calls at once!\") }}\n        {%- endif %}\n        {%- set tool_call = message.tool_calls[0].function %}\n        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n        {{- '{\"name\": \"' + tool_call.name + '\", ' }}\n        {{- '\"parameters\": ' }}\n        {{- tool_call.arguments | tojson }}\n        {{- \"}\" }}\n        {{- \"<|eot_id|>\" }}\n    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}\n        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}\n        {%- if message.content is mapping or message.content is iterable %}\n            {{- message.content | tojson }}\n        {%- else %}\n            {{- message.content }}\n        {%- endif %}\n        {{- \"<|eot_id|>\" }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n"

# Qwen/Qwen2.5-7B-Instruct: tools + tojson. Copy: llama.cpp tests/chat/templates/Qwen-Qwen2.5-7B-Instruct.jinja
QWEN2_5 = "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}\n        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"

# Qwen/Qwen3-0.6B: namespace, messages[::-1], .split/.lstrip/.rstrip/.strip, enable_thinking.
# Copy: llama.cpp models/templates/Qwen-Qwen3-0.6B.jinja
QWEN3 = "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0].role == 'system' %}\n        {{- messages[0].content + '\\n\\n' }}\n    {%- endif %}\n    {{- \"# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n    {%- if messages[0].role == 'system' %}\n        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}\n{%- for message in messages[::-1] %}\n    {%- set index = (messages|length - 1) - loop.index0 %}\n    {%- if ns.multi_step_tool and message.role == \"user\" and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}\n        {%- set ns.multi_step_tool = false %}\n        {%- set ns.last_query_index = index %}\n    {%- endif %}\n{%- endfor %}\n{%- for message in messages %}\n    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- elif message.role == \"assistant\" %}\n        {%- set content = message.content %}\n        {%- set reasoning_content = '' %}\n        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}\n            {%- set reasoning_content = message.reasoning_content %}\n        {%- else %}\n            {%- if '</think>' in message.content %}\n                {%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}\n                {%- set reasoning_content = message.content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}\n            {%- endif %}\n        {%- endif %}\n        {%- if loop.index0 > ns.last_query_index %}\n            {%- if loop.last or (not loop.last and reasoning_content) %}\n                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}\n            {%- else %}\n                {{- '<|im_start|>' + message.role + '\\n' + content }}\n            {%- endif %}\n        {%- else %}\n            {{- '<|im_start|>' + message.role + '\\n' + content }}\n        {%- endif %}\n        {%- if message.tool_calls %}\n            {%- for tool_call in message.tool_calls %}\n                {%- if (loop.first and content) or (not loop.first) %}\n                    {{- '\\n' }}\n                {%- endif %}\n                {%- if tool_call.function %}\n                    {%- set tool_call = tool_call.function %}\n                {%- endif %}\n                {{- '<tool_call>\\n{\"name\": \"' }}\n                {{- tool_call.name }}\n                {{- '\", \"arguments\": ' }}\n                {%- if tool_call.arguments is string %}\n                    {{- tool_call.arguments }}\n                {%- else %}\n                    {{- tool_call.arguments | tojson }}\n                {%- endif %}\n                {{- '}\\n</tool_call>' }}\n            {%- endfor %}\n        {%- endif %}\n        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}\n        {%- if loop.first or (messages[loop.index0 - 1].role != \"tool\") %}\n            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n    {%- if enable_thinking is defined and enable_thinking is false %}\n        {{- '<think>\\n\\n</think>\\n\\n' }}\n    {%- endif %}\n{%- endif %}"

# mistralai/Mistral-7B-Instruct-v0.3: raise_exception on bad alternation, tools, loop_messages.
MISTRAL_V0_3 = '{%- if messages[0]["role"] == "system" %}\n    {%- set system_message = messages[0]["content"] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}\n\n{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}\n{%- set ns = namespace() %}\n{%- set ns.index = 0 %}\n{%- for message in loop_messages %}\n    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}\n        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}\n            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}\n        {%- endif %}\n        {%- set ns.index = ns.index + 1 %}\n    {%- endif %}\n{%- endfor %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message["role"] == "user" %}\n        {%- if tools is not none and (message == user_messages[-1]) %}\n            {{- "[AVAILABLE_TOOLS] [" }}\n            {%- for tool in tools %}\n                {%- set tool = tool.function %}\n                {{- \'{"type": "function", "function": {\' }}\n                {%- for key, val in tool.items() if key != "return" %}\n                    {%- if val is string %}\n                        {{- \'"\' + key + \'": "\' + val + \'"\' }}\n                    {%- else %}\n                        {{- \'"\' + key + \'": \' + val|tojson }}\n                    {%- endif %}\n                    {%- if not loop.last %}\n                        {{- ", " }}\n                    {%- endif %}\n                {%- endfor %}\n                {{- "}}" }}\n                {%- if not loop.last %}\n                    {{- ", " }}\n                {%- else %}\n                    {{- "]" }}\n                {%- endif %}\n            {%- endfor %}\n            {{- "[/AVAILABLE_TOOLS]" }}\n            {%- endif %}\n        {%- if loop.last and system_message is defined %}\n            {{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}\n        {%- else %}\n            {{- "[INST] " + message["content"] + "[/INST]" }}\n        {%- endif %}\n    {%- elif message.tool_calls is defined and message.tool_calls is not none %}\n        {{- "[TOOL_CALLS] [" }}\n        {%- for tool_call in message.tool_calls %}\n            {%- set out = tool_call.function|tojson %}\n            {{- out[:-1] }}\n            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}\n                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}\n            {%- endif %}\n            {{- \', "id": "\' + tool_call.id + \'"}\' }}\n            {%- if not loop.last %}\n                {{- ", " }}\n            {%- else %}\n                {{- "]" + eos_token }}\n            {%- endif %}\n        {%- endfor %}\n    {%- elif message["role"] == "assistant" %}\n        {{- " " + message["content"]|trim + eos_token}}\n    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}\n        {%- if message.content is defined and message.content.content is defined %}\n            {%- set content = message.content.content %}\n        {%- else %}\n            {%- set content = message.content %}\n        {%- endif %}\n        {{- \'[TOOL_RESULTS] {"content": \' + content|string + ", " }}\n        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}\n            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}\n        {%- endif %}\n        {{- \'"call_id": "\' + message.tool_call_id + \'"}[/TOOL_RESULTS]\' }}\n    {%- else %}\n        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}\n    {%- endif %}\n{%- endfor %}\n'

# TinyLlama/TinyLlama-1.1B-Chat-v1.0 (Zephyr's template): block tags on their own lines, so its
# output depends on trim_blocks.
TINYLLAMA = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"

# llama.cpp's fallback for models without a template (common/chat.cpp CHATML_TEMPLATE_SRC).
CHATML = (
    "{%- for message in messages -%}\n"
    "  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}"
)

# --- Conversations ----------------------------------------------------------------------------


def msg(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = {
    "single-user": [msg("user", "Hello!")],
    "system-multi-turn": [
        msg("system", "You are a terse assistant."),
        msg("user", "What is 2+2?"),
        msg("assistant", "4"),
        msg("user", "And 3+3?"),
    ],
    "multi-turn": [
        msg("user", "Hi there"),
        msg("assistant", "Hello! How can I help?"),
        msg("user", "Tell me a joke."),
    ],
    "ends-with-assistant": [msg("user", "Ping"), msg("assistant", "Pong")],
    "non-ascii": [
        msg("system", "Réponds en français. 日本語もOK."),
        msg("user", "Héllo, 世界! Привет 👋 — ça va? «ok»"),
        msg("assistant", "Très bien, merci ✓ — 👍"),
        msg("user", "Ünïcödé: ñ, ß, ø, 中文, العربية, עברית"),
    ],
    "newlines-quotes": [
        msg("user", 'Line one\nLine two\n\n    indented line\n"double" and \'single\' quotes, back\\slash, tab\there'),
        msg("assistant", "  Padded answer with trailing newline\n\n"),
        msg("user", '{{ not a template }} {% neither %} <tag attr="x"> & ; \u00a0nbsp'),
    ],
    "thinking": [
        msg("user", "What is 1+1?"),
        msg("assistant", "<think>\nSimple arithmetic.\n</think>\n\n2"),
        msg("user", "And 2+2?"),
        msg("assistant", "<think>\nAlso simple.\n</think>\n\n4"),
    ],
}

NOT_ALTERNATING = [msg("user", "first"), msg("user", "second")]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "The city, e.g. Zürich"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    }
]

TEMPLATES = {
    # name: (source, bos, eos, extra variables for every case)
    "smollm2": (SMOLLM2, "<|im_start|>", "<|im_end|>", {}),
    "llama-3.3": (LLAMA_3_3, "<|begin_of_text|>", "<|eot_id|>", {}),
    "llama-3.2": (LLAMA_3_2, "<|begin_of_text|>", "<|eot_id|>", {"date_string": "02 Mar 2025"}),
    "qwen2.5": (QWEN2_5, "", "<|im_end|>", {}),
    "mistral-v0.3": (MISTRAL_V0_3, "<s>", "</s>", {}),
    "qwen3": (QWEN3, "", "<|im_end|>", {}),
    "tinyllama": (TINYLLAMA, "<s>", "</s>", {}),
    "chatml": (CHATML, "", "", {}),
}

# Extra cases: (template, conversation, add_generation_prompt, extra variables, requires)
EXTRA_CASES = [
    ("qwen3", "multi-turn", True, {"enable_thinking": False}, []),
    ("llama-3.3", "multi-turn", True, {"builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"]}, []),
    ("llama-3.3", "system-multi-turn", True, {"date_string": "01 Jan 2025", "tools_in_user_message": False}, []),
    ("qwen2.5", "system-multi-turn", True, {"tools": TOOLS}, []),
    ("qwen3", "multi-turn", True, {"tools": TOOLS}, []),
    ("llama-3.3", "multi-turn", True, {"tools": TOOLS}, []),
    ("llama-3.3", "system-multi-turn", False, {"tools": TOOLS, "tools_in_user_message": False}, []),
    ("mistral-v0.3", "multi-turn", False, {"tools": TOOLS}, []),
]

# Small templates that pin down Python/jinja2 behaviour the real templates depend on.
PROBES = [
    ("trim-blocks", "{% if true %}\nyes\n{% endif %}\nafter\n", []),
    ("lstrip-blocks", "a\n    {% if true %}\n    b\n    {% endif %}\nc\n  {%+ if true %}kept{% endif %}", []),
    ("keep-trailing-newline", "{{ 'x' }}\n\n", []),
    ("whitespace-control", "a   {{- 'b' -}}   c  {%- if true -%}  d  {%- endif %} e", []),
    ("python-str", "{{ true }} {{ false }} {{ none }} {{ [1, 'a', none, true] }} {{ 2.5 }} {{ 4 / 2 }} {{ 1e20 }} {{ 0.00001 }} {{ 7 // 2 }} [{{ undefined_thing }}]", []),
    ("python-repr-strings", "{{ ['it\\'s', 'say \"hi\"', 'both \\' and \"', 'tab\\there', 'é'] }}", []),
    ("string-filter", "{{ messages[0]|string }}|{{ true|string }}|{{ none|string }}", []),
    ("tojson-basic", "{{ messages | tojson }}\n{{ 'é <b>&amp;</b> \\'q\\' \"d\" \\\\ \\n\\t' | tojson }}", []),
    ("tojson-indent", "{{ messages | tojson(indent=2) }}\n{{ [] | tojson(indent=2) }}{{ [[], [1]] | tojson(indent=1) }}", []),
    ("tojson-options", "{{ messages[0] | tojson(sort_keys=true) }}|{{ messages | tojson(separators=(',', ':')) }}|{{ 'é' | tojson(ensure_ascii=true) }}|{{ [1.5, 2, none, true, 1e-7] | tojson }}", []),
    ("string-methods", "{{ '  pad  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ 'a b  c'.split() }}|{{ 'a,b,,c'.split(',') }}|{{ 'hello'.startswith('he') }}|{{ 'hello'.endswith(('x', 'lo')) }}|{{ 'Hello World'.lower() }}|{{ 'ab'.upper() }}|{{ 'a-b'.replace('-', '+') }}|{{ '\\n\\nx\\n'.lstrip('\\n') }}|{{ 'x\\n\\n'.rstrip() }}|{{ 'hello world'.title() }}", []),
    ("loop-and-namespace", "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{{ loop.index }}/{{ loop.length }}:{{ m.role }}{% if loop.previtem is defined %}<{{ loop.previtem.role }}{% endif %}{% if loop.nextitem is defined %}>{{ loop.nextitem.role }}{% endif %};{% endfor %}{{ ns.n }}|{% for m in messages[::-1] %}{{ m.role[0] }}{% endfor %}|{{ messages | map(attribute='role') | join(',') }}|{{ messages | selectattr('role', 'equalto', 'user') | list | length }}|{{ messages[-1]['content'] }}", []),
    ("tests", "{{ x is undefined }} {{ messages is iterable }} {{ messages[0] is mapping }} {{ 'a' is string }} {{ 6 is divisibleby(3) }} {{ none is none }} {{ 'role' in messages[0] }} {{ 'tool_calls' in messages[0] }} {{ messages[0].tool_calls is defined }}", []),
    ("dict-items", "{% for k, v in messages[0].items() %}{{ k }}={{ v }};{% endfor %}{% for k in messages[0] %}{{ k }},{% endfor %}", []),
    ("raise-exception", "{% if messages | length > 1 %}{{ raise_exception('Too many messages: ' ~ messages | length) }}{% endif %}ok", []),
    ("strftime-defined", "{{ strftime_now is defined }} {{ raise_exception is defined }} {{ namespace is defined }}", []),
    ("map-literal-order", "{{ {'b': 1, 'a': 2} | tojson }} {% for k in {'z': 1, 'y': 2} %}{{ k }}{% endfor %}", ["preserve_order"]),
    ("loop-controls", "{% for m in messages %}{% if m.role == 'assistant' %}{% continue %}{% endif %}{% if loop.index > 3 %}{% break %}{% endif %}{{ m.content }};{% endfor %}", ["loop_controls"]),
    ("generation-tag", "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% else %}{{ m.content }}{% endif %}\n{% endfor %}", []),
]

SYNTAX_ERRORS = [
    ("unclosed-if", "{% for m in messages %}\n{{ m.content }}\n{% endfor %}\n{% if add_generation_prompt %}\nassistant:\n"),
    ("bad-expression", "line one\n{{ messages[0]. }}\n"),
    ("unknown-tag", "a\nb\n{% frobnicate %}\n"),
]

# strftime: (unix seconds, format) rendered from a naive UTC datetime, as strftime_now renders
# datetime.now() (naive local time; the Rust side uses UTC).
STRFTIME_TIMES = [0, 1721952000, 1709210096, 1735689599, 4102444800, 951782400, -31536000, 1230768000, 1609459200]
STRFTIME_FORMATS = [
    "%d %b %Y",
    "%Y-%m-%d %H:%M:%S",
    "%A %B %-d, %Y",
    "%a %j %U %W %u %w %y %I %p %e %k %l",
    "%c | %x | %X | %D | %F | %T | %R",
    "%G-W%V-%u %g",
    "%%|%f|%H%M|%C|%h|%n|%t|%Z|%z|%-m/%-d/%y|%-I:%M %p",
]


def render(source, messages, add_generation_prompt, kwargs):
    try:
        rendered, _ = render_jinja_template(
            conversations=[messages],
            chat_template=source,
            add_generation_prompt=add_generation_prompt,
            **kwargs,
        )
        return {"expected": rendered[0]}
    except jinja2.exceptions.TemplateSyntaxError as e:
        return {"error": {"kind": "syntax", "line": e.lineno, "message": e.message}}
    except jinja2.exceptions.TemplateError as e:
        return {"error": {"kind": "raised", "message": str(e)}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "chat_templates.json"))
    ap.add_argument("--smol-dir", default="/tmp/ar/smol-hf" if os.path.isdir("/tmp/ar/smol-hf") else None)
    args = ap.parse_args()

    tokenizer = None
    if args.smol_dir:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.smol_dir)
        with open(os.path.join(args.smol_dir, "tokenizer_config.json"), encoding="utf-8") as f:
            assert json.load(f)["chat_template"] == SMOLLM2, "the SmolLM2 folder's template differs from SMOLLM2"

    cases = []

    def add(name, tname, conversation, agp, extra, requires):
        source, bos, eos, base_extra = TEMPLATES[tname]
        extra = {**base_extra, **extra}
        messages = CONVERSATIONS[conversation] if isinstance(conversation, str) else conversation
        kwargs = {"bos_token": bos, "eos_token": eos, **extra}
        result = render(source, messages, agp, kwargs)
        if tokenizer is not None and "expected" in result:
            # The same through the tokenizer's own entry point (its other special tokens are
            # passed too; none of these templates reads them).
            via_tokenizer = tokenizer.apply_chat_template(
                messages, chat_template=source, tokenize=False, add_generation_prompt=agp, **kwargs
            )
            assert via_tokenizer == result["expected"], f"{name}: apply_chat_template disagrees"
        case = {
            "name": name,
            "template": tname,
            "bos_token": bos,
            "eos_token": eos,
            "messages": messages,
            "add_generation_prompt": agp,
            "extra_json": json.dumps(extra, ensure_ascii=False),
            "requires": requires,
        }
        case.update(result)
        cases.append(case)

    for tname in TEMPLATES:
        for conv in CONVERSATIONS:
            for agp in (False, True):
                add(f"{tname}/{conv}/agp={agp}", tname, conv, agp, {}, [])
    for tname, conv, agp, extra, requires in EXTRA_CASES:
        add(f"{tname}/{conv}/agp={agp}/{'+'.join(extra)}", tname, conv, agp, extra, requires)
    add("mistral-v0.3/not-alternating", "mistral-v0.3", NOT_ALTERNATING, True, {}, [])

    probes = []
    for name, source, requires in PROBES:
        messages = CONVERSATIONS["system-multi-turn"]
        probe = {"name": name, "source": source, "messages": messages, "requires": requires}
        probe.update(render(source, messages, True, {"bos_token": "<s>", "eos_token": "</s>"}))
        probes.append(probe)
    for name, source in SYNTAX_ERRORS:
        probe = {"name": name, "source": source, "messages": CONVERSATIONS["single-user"], "requires": []}
        probe.update(render(source, CONVERSATIONS["single-user"], True, {}))
        assert probe.get("error", {}).get("kind") == "syntax", name
        probes.append(probe)

    strftime = [
        {"unix": t, "format": f, "expected": datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None).strftime(f)}
        for t in STRFTIME_TIMES
        for f in STRFTIME_FORMATS
    ]

    out = {
        "generator": "tools/chat_template_golden.py",
        "transformers": transformers.__version__,
        "jinja2": jinja2.__version__,
        "templates": {name: source for name, (source, _, _, _) in TEMPLATES.items()},
        "cases": cases,
        "probes": probes,
        "strftime": strftime,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n_err = sum("error" in c for c in cases + probes)
    print(f"wrote {args.out}: {len(cases)} cases, {len(probes)} probes ({n_err} expecting errors), "
          f"{len(strftime)} strftime checks; transformers {transformers.__version__}, jinja2 {jinja2.__version__}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
