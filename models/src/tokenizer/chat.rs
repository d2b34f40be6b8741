//! [`ChatTemplate`]: the Jinja chat template of a GGUF file, rendered with minijinja.

use aihal_core::{CoreError, Result};
use aihal_quantize::GgufFile;
use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind, State};
use serde::Serialize;

/// One message of a conversation, as chat templates expect it (`message['role']`,
/// `message['content']`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `"system"`, `"user"` or `"assistant"` (templates may accept other roles).
    pub role: String,
    /// The text of the message.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role` with `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

const TEMPLATE_NAME: &str = "chat_template";

/// Gemma's turn format (see [`ChatTemplate::builtin_for`]), written for this crate.
const GEMMA_TURNS: &str = concat!(
    "{{ bos_token }}{% set ns = namespace(prefix='') %}",
    "{% for m in messages %}",
    "{% if m.role == 'system' %}{% set ns.prefix = m.content ~ '\\n\\n' %}",
    "{% else %}",
    "{{ '<start_of_turn>' ~ ('model' if m.role == 'assistant' else m.role) ~ '\\n' }}",
    "{% if m.role == 'user' %}{{ ns.prefix }}{% set ns.prefix = '' %}{% endif %}",
    "{{ m.content | trim }}{{ '<end_of_turn>\\n' }}",
    "{% endif %}",
    "{% endfor %}",
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}",
);

/// The texts of a file's BOS and EOS tokens (empty where it names none).
fn special_texts(file: &GgufFile) -> (String, String) {
    let token_text = |key: &str| -> String {
        let id = file.get(key).and_then(aihal_quantize::GgufValue::as_u64);
        let tokens = file
            .get("tokenizer.ggml.tokens")
            .and_then(aihal_quantize::GgufValue::as_array)
            .and_then(|a| match a {
                aihal_quantize::gguf::GgufArray::String(t) => Some(t),
                _ => None,
            });
        match (id, tokens) {
            (Some(id), Some(t)) => usize::try_from(id)
                .ok()
                .and_then(|i| t.get(i))
                .cloned()
                .unwrap_or_default(),
            _ => String::new(),
        }
    };
    let bos = token_text("tokenizer.ggml.bos_token_id");
    let eos = token_text("tokenizer.ggml.eos_token_id");
    (bos, eos)
}

/// A chat template (`tokenizer.chat_template`), rendered with minijinja.
///
/// The environment is the one Hugging Face `transformers` renders chat templates in
/// (`trim_blocks` and `lstrip_blocks` on, loop controls), with the variables `messages`,
/// `add_generation_prompt`, `bos_token` and `eos_token`, the function
/// `raise_exception(message)` (rendering fails with that message), and the Python string
/// methods templates call: `strip`, `lstrip`, `rstrip` (with an optional set of
/// characters), `startswith`, `endswith`, `upper`, `lower`, `replace`, `split`, and the
/// mapping methods `get`, `items`, `keys`, `values`.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// The `tokenizer.chat_template` of the file, or `Ok(None)` if it has none.
    ///
    /// `bos_token` and `eos_token` are the texts of the file's BOS and EOS tokens (empty when
    /// it names none). Errors: `InvalidInput` when the key is not a string or the template
    /// does not parse.
    pub fn from_gguf(file: &GgufFile) -> Result<Option<Self>> {
        let Some(value) = file.get("tokenizer.chat_template") else {
            return Ok(None);
        };
        let source = value.as_str().ok_or_else(|| {
            CoreError::invalid_input(format!(
                "GGUF chat template: tokenizer.chat_template is a {:?}, not a string",
                value.value_type()
            ))
        })?;
        let (bos, eos) = special_texts(file);
        Self::new(source, bos, eos).map(Some)
    }

    /// The template this crate writes for a file of an architecture whose files often carry
    /// none, or `Ok(None)`: for `gemma3` (Gemma 3), its turn format: BOS, then per message
    /// `<start_of_turn>` + role (`assistant` written `model`) + a newline + the trimmed text +
    /// `<end_of_turn>` and a newline, a system message's text put in front of the next user
    /// message with a blank line, and `<start_of_turn>model` and a newline to prompt the
    /// answer. Use it where [`from_gguf`](Self::from_gguf) finds no template.
    ///
    /// Errors: `InvalidInput` when `general.architecture` is not a string.
    pub fn builtin_for(file: &GgufFile) -> Result<Option<Self>> {
        let arch = match file.get("general.architecture") {
            None => return Ok(None),
            Some(v) => v
                .as_str()
                .ok_or_else(|| CoreError::invalid_input("GGUF file: general.architecture is not a string"))?,
        };
        let source = match arch {
            "gemma3" => GEMMA_TURNS,
            _ => return Ok(None),
        };
        let (bos, eos) = special_texts(file);
        Self::new(source, bos, eos).map(Some)
    }

    /// A template from its Jinja source, with the texts `bos_token` and `eos_token` give the
    /// template. Errors: `InvalidInput` when the source does not parse.
    pub fn new(source: &str, bos_token: impl Into<String>, eos_token: impl Into<String>) -> Result<Self> {
        let mut env = Environment::new();
        // transformers renders chat templates with trim_blocks and lstrip_blocks
        // (`_compile_jinja_template` in its chat template utilities).
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function("raise_exception", raise_exception);
        env.set_unknown_method_callback(python_method);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| CoreError::invalid_input(format!("GGUF chat template does not parse: {e:#}")))?;
        Ok(Self {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// The prompt text for `messages`; with `add_generation_prompt`, it ends with the
    /// opening of an assistant turn. Errors: `InvalidInput` when the template raises an
    /// exception (for example roles that do not alternate) or fails to render.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| CoreError::invalid_input(format!("GGUF chat template: {e:#}")))?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| CoreError::invalid_input(format!("GGUF chat template failed to render: {e:#}")))
    }
}

/// `raise_exception(message)`, which transformers provides to chat templates.
fn raise_exception(message: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// The Python `str` and `dict` methods chat templates call, which minijinja does not have.
fn python_method(_state: &State, value: &Value, method: &str, args: &[Value]) -> std::result::Result<Value, Error> {
    if let Some(s) = value.as_str() {
        return string_method(s, method, args);
    }
    if value.kind() == minijinja::value::ValueKind::Map {
        return map_method(value, method, args);
    }
    Err(Error::from(ErrorKind::UnknownMethod))
}

fn string_arg<'a>(method: &str, args: &'a [Value], i: usize) -> std::result::Result<Option<&'a str>, Error> {
    match args.get(i) {
        None => Ok(None),
        Some(v) if v.is_none() || v.is_undefined() => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("str.{method}: argument {} is not a string", i + 1),
            )
        }),
    }
}

fn string_method(s: &str, method: &str, args: &[Value]) -> std::result::Result<Value, Error> {
    let chars = |i| -> std::result::Result<Option<Vec<char>>, Error> {
        Ok(string_arg(method, args, i)?.map(|c| c.chars().collect()))
    };
    let trimmed = |left: bool, right: bool| -> std::result::Result<Value, Error> {
        let set = chars(0)?;
        let strip = |c: char| match &set {
            Some(set) => set.contains(&c),
            None => c.is_whitespace(),
        };
        let mut out = s;
        if left {
            out = out.trim_start_matches(strip);
        }
        if right {
            out = out.trim_end_matches(strip);
        }
        Ok(Value::from(out))
    };
    match method {
        "strip" => trimmed(true, true),
        "lstrip" => trimmed(true, false),
        "rstrip" => trimmed(false, true),
        "startswith" | "endswith" => {
            let affix = string_arg(method, args, 0)?
                .ok_or_else(|| Error::new(ErrorKind::MissingArgument, format!("str.{method} needs an argument")))?;
            Ok(Value::from(if method == "startswith" {
                s.starts_with(affix)
            } else {
                s.ends_with(affix)
            }))
        }
        "upper" => Ok(Value::from(s.to_uppercase())),
        "lower" => Ok(Value::from(s.to_lowercase())),
        "replace" => {
            let from = string_arg(method, args, 0)?;
            let to = string_arg(method, args, 1)?;
            match (from, to) {
                (Some(from), Some(to)) => Ok(Value::from(s.replace(from, to))),
                _ => Err(Error::new(ErrorKind::MissingArgument, "str.replace needs two strings")),
            }
        }
        "split" => {
            let parts: Vec<Value> = match string_arg(method, args, 0)? {
                Some("") => return Err(Error::new(ErrorKind::InvalidOperation, "str.split: empty separator")),
                Some(sep) => s.split(sep).map(Value::from).collect(),
                None => s.split_whitespace().map(Value::from).collect(),
            };
            Ok(Value::from(parts))
        }
        _ => Err(Error::from(ErrorKind::UnknownMethod)),
    }
}

fn map_method(map: &Value, method: &str, args: &[Value]) -> std::result::Result<Value, Error> {
    match method {
        "get" => {
            let key = args
                .first()
                .ok_or_else(|| Error::new(ErrorKind::MissingArgument, "dict.get needs a key"))?;
            let found = map.get_item(key)?;
            Ok(if found.is_undefined() {
                args.get(1).cloned().unwrap_or(Value::from(()))
            } else {
                found
            })
        }
        "items" | "keys" | "values" => {
            let mut out = Vec::new();
            for key in map.try_iter()? {
                let item = map.get_item(&key)?;
                out.push(match method {
                    "items" => Value::from(vec![key, item]),
                    "keys" => key,
                    _ => item,
                });
            }
            Ok(Value::from(out))
        }
        _ => Err(Error::from(ErrorKind::UnknownMethod)),
    }
}
