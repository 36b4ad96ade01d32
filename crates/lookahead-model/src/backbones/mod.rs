//! Pretrained networks the routers build on: the BERT ([`bert`]) and ModernBERT
//! ([`modernbert`]) encoders behind one [`encoder::Encoder`], an encoder directory loaded with
//! its tokenizer and hash ([`encoder_dir`]), the token ids MLM needs from its vocabulary
//! ([`mlm_tokens`]), and the Llama-family decoder ([`llama`]) read from GGUF ([`gguf`]).

pub mod bert;
pub mod encoder;
pub mod encoder_dir;
pub mod gguf;
pub mod llama;
pub mod mlm_tokens;
pub mod modernbert;
