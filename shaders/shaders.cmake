# Every kernel and its variants. Variant names are <op>_<wtype>_<acttype> where types vary.
snapvk_shader(add add.comp)
snapvk_shader(mul mul.comp)
snapvk_shaders_finish()
