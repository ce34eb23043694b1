# The BCCD baseline student trained with MultistepSGD instead of SGD: the gradient is
# extrapolated from the previous step, d = g + alpha * (g - g_prev), before SGD's Nesterov
# momentum. alpha = 0 would be plain SGD; 0.5 without momentum is two-step Adams-Bashforth.
_base_ = './yolov5_n_320_20e_bccd.py'

custom_imports = dict(imports=['kd_plugin'], allow_failed_imports=False)

optim_wrapper = dict(optimizer=dict(type='kd_plugin.MultistepSGD', alpha=0.5))
